"""Real-time interaction (omni_core.stream, omni_core.speech_boundary, omni_core.stream_latency) on a tiny
random model and a freshly trained speech boundary head: incremental prefill equals one-shot prefill, turns
reuse the cache, audio streamed in chunks adds up to the whole utterance's tokens and is prefilled before
the end of speech, the boundary head finds utterance starts/ends on held-out voices and sentences, barge-in
stops generation, and the latency comparison of streaming and re-encoding measures both alike."""
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from omni_core.config import ConfigError, load_config
from omni_core.data.sources.speech import flite
from omni_core.model.token_counts import audio_num_tokens
from omni_core.plots import plot_speech_boundaries, plot_turn_latency
from omni_core.speech_boundary import (
    SpeechBoundaryHead,
    detect,
    evaluate_boundaries,
    load_or_train_speech_boundary,
    synth_streams,
    tts_sentences,
)
from omni_core.stream import OmniSession
from omni_core.stream_latency import ask_turns, compare_prefill, push_stream, summarize

# Boundary quality on held-out streams (unseen voice "awb", unseen sentences); measured 0.98 / 0.985.
MIN_FRAME_ACCURACY, MIN_BOUNDARY_F1 = 0.9, 0.85


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(n)]


def _noise(seconds, seed=0, level=0.1):
    return (level * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def _one_shot_logits(session):
    with torch.no_grad():
        inputs = session.conversation_inputs()
        return session.model(**inputs).logits[0]


def _check_prefill_logits(session):
    full = _one_shot_logits(session)
    assert session.logits, "record_logits=True should keep the prefill logits"
    for start, logits in session.logits:
        torch.testing.assert_close(logits, full[start:start + len(logits)], atol=1e-5, rtol=1e-4)


def test_incremental_prefill_matches_one_shot(cfg, model_and_processor):
    model, processor = model_and_processor
    s = OmniSession(model, processor, cfg=cfg.stream, record_logits=True)
    f = _frames(3)
    s.add_frame(f[0])
    s.add_frame(f[1])
    s.add_text("what is in the video")
    s.add_frame(f[2])
    s.end_turn(audio=_noise(1.3))
    assert len(s.logits) >= 4                         # one prefill per frame, then the end of the turn
    assert s.n_cached == len(s.ids) - 1 == s.cache.get_seq_length()
    _check_prefill_logits(s)


def test_multi_turn_reuses_cache(cfg, model_and_processor):
    model, processor = model_and_processor
    s = OmniSession(model, processor, cfg=cfg.stream, record_logits=True)
    first = s.ask(text="hello", audio=_noise(0.7), frames=_frames(2))
    cache, n_before = s.cache, s.cache.get_seq_length()
    keys_before = s.cache.layers[0].keys[..., :n_before, :].clone()
    s.logits.clear()
    s.add_frame(_frames(1, seed=1)[0])
    after_frame = s.n_cached
    assert after_frame == len(s.ids)                                 # the frame is in the cache already
    prefilled = s.end_turn(audio=_noise(0.5, seed=1))
    n_turn_end = len(s.ids) - after_frame                            # video end + audio + template tokens
    second = s.answer()
    assert s.cache is cache                                          # same cache object, extended in place
    torch.testing.assert_close(s.cache.layers[0].keys[..., :n_before, :], keys_before, atol=0, rtol=0)
    # the end of the second turn prefilled only what came after its frame: never the history again
    assert prefilled == n_turn_end - 1 and n_turn_end < after_frame / 2
    assert len(s.turns) == 2 and isinstance(first, str) and isinstance(second, str)
    _check_prefill_logits(s)           # the second turn's prefill also matches, answer tokens included


def test_baseline_without_incremental_prefill_gives_the_same_answers(cfg, model_and_processor):
    model, processor = model_and_processor
    answers = {}
    for incremental in (True, False):
        s = OmniSession(model, processor, cfg=cfg.stream, incremental=incremental)
        a1 = s.ask(text="hello", audio=_noise(0.7), frames=_frames(2))
        a2 = s.ask(audio=_noise(0.5, seed=1), frames=_frames(1, seed=1))
        answers[incremental] = (a1, a2, s.turns[-1].tokens_prefilled_after_speech, list(s.ids))
    assert answers[True][:2] == answers[False][:2] and answers[True][3] == answers[False][3]
    # the baseline re-prefills the whole conversation at the end of speech, streaming only the new part
    assert answers[False][2] > 2 * answers[True][2]


def test_boundary_accuracy_on_held_out_streams(speech_boundary_head):
    _, held_out = tts_sentences()
    streams = synth_streams(16, ("awb",), seed=1, sentences=held_out)
    metrics = evaluate_boundaries(speech_boundary_head, streams, chunk_seconds=0.2)
    assert metrics["frame_accuracy"] >= MIN_FRAME_ACCURACY, metrics
    assert metrics["boundary_f1"] >= MIN_BOUNDARY_F1, metrics
    # a detector fed in odd-sized chunks sees exactly the offline frame probabilities (causal head)
    wave = streams[0].wave
    offline = torch.sigmoid(speech_boundary_head(speech_boundary_head.frontend().offline(wave)[None]))[0].detach().numpy()
    events, streamed = detect(speech_boundary_head, wave, chunk_seconds=0.137)
    np.testing.assert_allclose(streamed, offline, atol=1e-5)
    fig = plot_speech_boundaries(wave, streamed, events, streams[0].labels, speech_boundary_head.hop_seconds)
    assert len(fig.axes[0].lines) == 2 + 2 * len(events)          # audio, P(speech), where + when per event
    plt.close(fig)


def test_speech_boundary_head_is_saved_next_to_the_checkpoint(tmp_path):
    head = load_or_train_speech_boundary(tmp_path / "speech_boundary", n_streams=8, steps=20)
    assert (tmp_path / "speech_boundary" / "config.json").is_file()
    again = load_or_train_speech_boundary(tmp_path / "speech_boundary")
    x = torch.randn(1, 50, head.n_mels)
    torch.testing.assert_close(again(x), head(x))
    assert isinstance(again, SpeechBoundaryHead)


def _audio_items(session):
    """Token count of each audio item of the conversation, in order."""
    return [int(m.tensors["audio_token_counts"]) for m in session.media if m.kind == "audio"]


def _audio_span(session):
    """The pads between the (single) <|audio_start|> and <|audio_end|> of the conversation."""
    ids = session.ids
    a, b = ids.index(session.tok["audio", "start"]), ids.index(session.tok["audio", "end"])
    return ids[a + 1:b]


def test_add_audio_chunks_add_up_to_the_whole_utterance(cfg, model_and_processor):
    model, processor = model_and_processor
    audio, ds = _noise(1.3), model.config.audio_downsample
    token = ds * 320                                 # samples per audio token
    whole = OmniSession(model, processor, cfg=replace(cfg.stream, audio_chunk_seconds=0.3))
    whole.end_turn(audio=audio)                     # end_turn alone: one item, whatever audio_chunk_seconds
    n_whole = audio_num_tokens(len(audio), ds)
    assert _audio_items(whole) == [n_whole]
    ids = {}
    for incremental in (True, False):
        s = OmniSession(model, processor, cfg=replace(cfg.stream, audio_chunk_seconds=0.3), incremental=incremental,
                        record_logits=True)
        s.add_frame(_frames(1)[0])
        n = s.audio_chunk_samples
        assert n % token == 0 and abs(n - 0.3 * 16000) <= token / 2      # whole tokens, as near 0.3 s as can be
        for i in range(0, len(audio), 2200):         # pieces that do not line up with the chunks
            s.add_audio(audio[i:i + 2200])
            if incremental:
                assert s.n_cached == len(s.ids)      # every whole chunk is prefilled as soon as it is there
        with pytest.raises(RuntimeError, match="audio span is open"):
            s.add_frame(_frames(1)[0])
        s.end_turn(text="what is in the video")
        items = _audio_items(s)
        assert items == [n // token] * (len(audio) // n) + [audio_num_tokens(len(audio) % n, ds)]
        assert sum(items) == n_whole and len(_audio_span(s)) == n_whole and abs(s.turns[0].audio_seconds - 1.3) < 1e-6
        _check_prefill_logits(s)                      # the one-shot forward of the same chunk items
        ids[incremental] = s.ids
    assert ids[True] == ids[False]                   # the baseline re-encodes the same items at the end
    exact = OmniSession(model, processor, cfg=replace(cfg.stream, audio_chunk_seconds=0.3), incremental=False)
    exact.add_audio(audio[:2 * exact.audio_chunk_samples])    # a whole number of chunks: no tail item
    exact.end_turn()
    assert _audio_items(exact) == [exact.audio_chunk_samples // token] * 2


def test_pushed_audio_is_prefilled_while_the_user_speaks(cfg, model_and_processor, speech_boundary_head):
    model, processor = model_and_processor
    audio = np.concatenate([_noise(0.6, level=0.003), _speech(), _noise(1.0, seed=2, level=0.003)])
    frames, step = _frames(40), int(0.1 * 16000)
    sessions, cached_at_end = {}, {}        # audio tokens in the KV cache when speech_end is emitted

    def on_event(e):
        if e.kind == "speech_end":
            cached_at_end[seconds] = s.ids[:s.n_cached].count(s.tok["audio", "pad"])

    for seconds in (0.0, 0.5):
        s = OmniSession(model, processor, speech_boundary_head,
                        replace(cfg.stream, audio_chunk_seconds=seconds, prefill_in_hangover=False),
                        auto_answer=False, record_logits=True, on_event=on_event)
        for i, start in enumerate(range(0, len(audio), step)):
            s.push_video_frame(frames[i % len(frames)])
            s.push_audio(audio[start:start + step])
        assert [e.kind for e in s.events] == ["speech_start", "speech_end"] and s.state == "ready"
        sessions[seconds] = s
    whole, chunked = sessions[0.0], sessions[0.5]
    assert len(_audio_items(whole)) == 1 and len(_audio_items(chunked)) >= 3
    assert cached_at_end[0.0] == 0 and cached_at_end[0.5] >= 2 * _audio_items(chunked)[0]   # in before the end
    # the same utterance (same boundaries), cut into chunks of whole tokens: the same audio tokens in all
    assert sum(_audio_items(chunked)) == sum(_audio_items(whole)) == len(_audio_span(chunked))
    assert chunked.turns[0].audio_seconds == whole.turns[0].audio_seconds
    # at the end of speech only the audio after the last whole chunk (at most a chunk and one push) is left
    after = chunked.turns[0].tokens_prefilled_after_speech
    closing = 1 + len(chunked.user_close) - 1          # <|audio_end|> + the template, less generate's input token
    assert after <= audio_num_tokens(chunked.audio_chunk_samples + step, model.config.audio_downsample) + closing
    assert after < whole.turns[0].tokens_prefilled_after_speech
    _check_prefill_logits(chunked)
    assert isinstance(chunked.answer(), str)


def _push_all(session, audio, frames, step=1600):
    for i, start in enumerate(range(0, len(audio), step)):
        session.push_video_frame(frames[i % len(frames)])
        session.push_audio(audio[start:start + step])


def _logged_take_back(session, log):
    """``session._take_back``, logging whether a guess stood when it ran."""
    original = session._take_back

    def take_back():
        log.append(session._guess is not None)
        original()
    return take_back


def test_turn_closed_in_the_hangover_is_the_same_turn_and_leaves_only_the_answer(cfg, model_and_processor,
                                                                               speech_boundary_head):
    """The guess made while the silence hangover runs is the turn the end decision would close; a pause shorter
    than the hangover takes it back, and the turn goes on as if no guess had been made."""
    model, processor = model_and_processor
    pause = np.zeros(int(0.02 * 16000), np.float32)   # with flite's own silences about 0.34 s: over the post-roll, under the hangover
    audio = np.concatenate([_noise(0.6, level=0.003), _speech(), pause, _speech(), _noise(1.0, seed=2, level=0.003)])
    frames, sessions, taken_back = _frames(40), {}, []
    for guess in (False, True):
        s = OmniSession(model, processor, speech_boundary_head, replace(cfg.stream, prefill_in_hangover=guess),
                        auto_answer=False, record_logits=True)
        if guess:
            s._take_back = _logged_take_back(s, taken_back)
        _push_all(s, audio, frames)
        assert [e.kind for e in s.events] == ["speech_start", "speech_end"] and s.state == "ready"
        sessions[guess] = s
    plain, guessed = sessions[False], sessions[True]
    assert any(taken_back), "the pause inside the utterance should have made a guess that was taken back"
    assert guessed.ids == plain.ids and len(guessed.media) == len(plain.media)
    assert guessed.turns[0].audio_seconds == plain.turns[0].audio_seconds
    assert guessed.turns[0].tokens_prefilled_after_speech == 0 < plain.turns[0].tokens_prefilled_after_speech
    _check_prefill_logits(guessed)                                # the cache after a take-back is the one-shot's
    assert guessed.answer() == plain.answer()


def test_bad_audio_chunk_seconds_is_refused():
    with pytest.raises(ConfigError, match=r"stream\.audio_chunk_seconds = -0\.5 is out of range"):
        load_config(overrides={"stream": {"audio_chunk_seconds": -0.5}})


def _speech():
    return flite("what is in the video", "awb")


def test_push_audio_runs_a_turn_from_speech(cfg, model_and_processor, speech_boundary_head):
    model, processor = model_and_processor
    s = OmniSession(model, processor, speech_boundary_head, cfg.stream, auto_answer=False)
    audio = np.concatenate([_noise(0.6, level=0.003), _speech(), _noise(1.0, seed=2, level=0.003)])
    frames = _frames(40)
    kinds, step = [], int(0.1 * 16000)                # 100 ms chunks with one camera frame each (10 fps)
    for i, start in enumerate(range(0, len(audio), step)):
        s.push_video_frame(frames[i % len(frames)])
        kinds += [e.kind for e in s.push_audio(audio[start:start + step])]
    assert kinds == ["speech_start", "speech_end"]
    turn = s.turns[0]
    assert s.state == "ready" and 1 <= turn.frames <= 3   # ~1 fps while speaking (+ the frame at speech start)
    assert abs(turn.audio_seconds - len(_speech()) / 16000) < 0.6
    assert isinstance(s.answer(), str) and s.state == "idle"


def test_barge_in_stops_generation(cfg, model_and_processor, speech_boundary_head):
    model, processor = model_and_processor
    s = OmniSession(model, processor, speech_boundary_head, cfg.stream, auto_answer=False)
    s.end_turn(text="tell me a long story")
    s.answer_async(max_new_tokens=2000, min_new_tokens=2000)   # would run for seconds without an interrupt
    assert s.state == "answering"
    speech, kinds, step = _speech(), [], int(0.1 * 16000)
    for start in range(0, len(speech), step):
        kinds += [e.kind for e in s.push_audio(speech[start:start + step])]
    assert kinds[:2] == ["barge_in", "speech_start"]
    first = s.turns[0]
    assert first.interrupted and first.done is not None
    n_answer = len(processor.tokenizer(first.answer, add_special_tokens=False)["input_ids"]) if first.answer else 0
    assert n_answer < 2000
    assert s.state == "listening" and len(s.turns) == 2        # the new speech opened the next turn
    assert s.cache.get_seq_length() == s.n_cached               # the truncated answer stays in the cache


def test_demo_replays_a_narrated_clip(tmp_path, cfg, model_and_processor, speech_boundary_head):
    from omni_core.data.sources.media import write_mp4
    from omni_core.data.sources.video import moving_digit
    from omni_core.demo_realtime import decode_clip, replay

    model, processor = model_and_processor
    rng = np.random.default_rng(0)
    digit = rng.integers(0, 255, (28, 28), dtype=np.uint8)
    audio = np.concatenate([np.zeros(8000, np.float32), _speech(), np.zeros(4000, np.float32)])
    frames = moving_digit(digit, "left", frames=int(len(audio) / 16000 * 8), size=32, rng=rng)
    write_mp4(tmp_path / "clip.mp4", frames, fps=8, audio=audio)
    clip = decode_clip(tmp_path / "clip.mp4")
    assert len(clip.frames) == len(frames) and abs(len(clip.audio) - len(audio)) < 0.1 * 16000
    pieces = []
    s = OmniSession(model, processor, speech_boundary_head, cfg.stream, on_text=pieces.append)
    replay(s, clip, chunk_seconds=0.2, speed=0)
    assert [e.kind for e in s.events] == ["speech_start", "speech_end", "answer_start", "answer_end"]
    assert s.turns[0].frames >= 1 and s.turns[0].first_token is not None
    assert "".join(pieces) == s.turns[0].answer          # the streamed pieces add up to the answer


def test_latency_comparison_of_whole_turns(cfg, model_and_processor):
    model, processor = model_and_processor
    conversation = [(_noise(0.7), _frames(2)), (_noise(0.5, seed=1), _frames(2, seed=1))]
    runs = compare_prefill(model, processor, cfg.stream, lambda s: ask_turns(s, conversation), repeats=2)
    assert list(runs) == ["streaming", "reencode"] and all(len(r) == 2 for r in runs.values())
    summary = {name: summarize(timings) for name, timings in runs.items()}
    for name, result in summary.items():
        assert len(result["latency_s"]) == 2 and min(result["latency_s"]) > 0, name
        assert result["frames_per_turn"] == [2, 2] and "rtf" not in result    # no stream clock for whole turns
        assert 0 < runs[name][0].answer_s < runs[name][0].compute_s
    # ask_turns drives a session as OmniSession.ask does, turn by turn
    s = OmniSession(model, processor, cfg=cfg.stream)
    for audio, frames in conversation:
        s.ask(audio=audio, frames=frames)
    streaming = summary["streaming"]
    assert streaming["tokens_prefilled_after_speech"] == [t.tokens_prefilled_after_speech for t in s.turns]
    assert streaming["context_tokens"] == summary["reencode"]["context_tokens"] == len(s.ids)
    # the baseline prefills the turn's frames at the end of speech, and from turn 2 the history too
    first, second = zip(streaming["tokens_prefilled_after_speech"], summary["reencode"]["tokens_prefilled_after_speech"])
    assert first[1] > first[0] and second[1] > 2 * second[0]
    fig = plot_turn_latency({name: result["latency_s"] for name, result in summary.items()})
    assert [line.get_label() for line in fig.axes[0].lines] == ["streaming", "re-encode"]
    plt.close(fig)


def test_latency_comparison_of_a_pushed_stream(cfg, model_and_processor, speech_boundary_head):
    model, processor = model_and_processor
    audio = np.concatenate([_noise(0.6, level=0.003), _speech(), _noise(1.0, seed=2, level=0.003)])
    frames = _frames(int(len(audio) / 16000 * 10) + 1)
    runs = compare_prefill(model, processor, cfg.stream, lambda s: push_stream(s, audio, frames, 0.1, 10),
                           speech_boundary=speech_boundary_head)
    summary = {name: summarize(timings) for name, timings in runs.items()}
    for name, result in summary.items():
        assert len(result["latency_s"]) == 1 and result["latency_s"][0] > 0, name
        assert 0 < result["rtf_input"] < result["rtf"] and 1 <= result["frames_per_turn"][0] <= 3
        assert runs[name][0].stream_seconds == len(audio) / 16000
    assert summary["streaming"]["frames_per_turn"] == summary["reencode"]["frames_per_turn"]   # same decisions
    assert summary["streaming"]["tokens_prefilled_after_speech"][0] < summary["reencode"]["tokens_prefilled_after_speech"][0]
