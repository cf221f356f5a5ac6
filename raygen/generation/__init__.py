"""The masked-token generation process, apart from the network: masking schedules, one decode
step, the sampler loop; around it, prompts to text states (``prompts``), token grids to pictures
(``render``) and the synthesize stage's image sets (``synthetic_sets``)."""
