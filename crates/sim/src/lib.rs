//! Simulated meters for ami, driven by the same device profiles as the collector, with fault injection.
