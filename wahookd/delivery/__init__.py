"""Delivery: the scheduler loop, its pure window and state machine, the recorder, the sender.

`scheduler.py` is the thin loop; `window.py` the in-memory lanes and heap (pure);
`recorder.py` commits outcomes and holds the slots of those not yet committed;
`transition.py` the one state machine of a delivery (pure); `retry.py` the ladder;
`sender.py`, `signing.py`, `netpolicy.py` and `attempt_errors.py` make one attempt.
"""
