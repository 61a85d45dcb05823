"""Latent analysis: residual-stream capture, refusal and harmfulness directions (Arditi et al. 2024;
Zhao et al. 2025), ablation and steering as removable hooks, weight orthogonalisation, the Latent Guard and
self-checking direction artifacts. Modules: ``layers``, ``capture``, ``directions``, ``intervene``, ``guard``,
``artifact``, ``extract``, ``use``, ``report``."""

from refusalkit.latent.intervene import InterventionModel, ablate, ablate_then_add, add, orthogonalize

__all__ = ["InterventionModel", "ablate", "ablate_then_add", "add", "orthogonalize"]
