"""The pipeline: partitioned queues on Dramatiq's Redis broker, exclusive partition consumers, job records."""
