"""Ray bootstrap, the scheduler actor, tier queues and the (Ray-free) dispatch policy."""
