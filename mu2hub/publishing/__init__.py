"""Producing a published system: plan and export, the model card, figures, commit targets, republishing references."""
