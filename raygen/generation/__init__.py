"""The masked-token generation process, apart from the network: masking schedules, one decode
step, the sampler loop."""
