"""Recipes turn a config into its list of stages: text-to-3D today; photo fitting and texturing next."""
