"""Live demo in a browser: camera and microphone stream into an :class:`omni_core.stream.OmniSession`, the
answer streams back as text (and, with ``--speak``, as flite speech); talking over an answer interrupts it.

    make demo                      # tiny checkpoint, http://127.0.0.1:7860
    make demo PROFILE=small        # the small profile's checkpoint
    python -m omni_core.web --help

:mod:`omni_core.web.server` is the app (FastAPI, one websocket per tab); ``static/`` is the page.
"""
