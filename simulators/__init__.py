"""Device simulators, meter servers, camera streams, scenarios and load generators."""
