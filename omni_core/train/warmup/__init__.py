"""Warm-ups: a module trained alone, on an objective of its own, before the language-model loss reads it.

- `encoders.py` runs an encoder's warm-up as a stage of its own (`stages.<name>.objective` other than
  "lm": stages 0_vision and 0_audio). The paper's encoders arrive pretrained (SigLIP, Whisper); the tiny
  profile's are random, so these stages give them what pretraining would: `vision_encoder.py` (digits,
  printed words and shapes) and `audio_encoder.py` (CTC transcription of the asr train split).
- `audio_projector.py` warms up the audio projector inside an lm stage, before its first step
  (`stages.<name>.audio_projector_ctc_steps`): CTC over the LLM's own input embeddings.

All of them step with `schedule.clip_and_step`, the optimizer step of the main loop.
"""
