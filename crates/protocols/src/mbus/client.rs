//! M-Bus master requests and sans-IO read-out / search state machines.
