"""Video analysis a camera worker calls per frame: motion, health, detectors; no I/O."""
