//! EN 13757-2 frames: single character E5, short, control and long frames, checksum, deframer, matchers.
