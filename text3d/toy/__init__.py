"""The toy world: a tiny Stable Diffusion *trained* on ray-cast primitives, so tests can check on CPU that text
becomes the right shape and colour.

- :mod:`text3d.toy.world`: the primitives, their exact renders from text3d's cameras and shaders, and captions in
  text3d's own view words.
- :mod:`text3d.toy.model`: the architecture and the diffusers folder; :data:`~text3d.toy.model.DEFAULT_MODEL_DIR`
  is the committed, trained model.
- :mod:`text3d.toy.train`: ``text3d toy-model train OUT`` (VAE with a colour check, then UNet + text encoder).
- :mod:`text3d.toy.checks` and :mod:`text3d.toy.semantic`: what the tests measure (hue through the VAE, samples
  against their captions, generated objects against the true primitives).
"""
