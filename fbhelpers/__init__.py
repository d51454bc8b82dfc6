"""fbhelpers: distribution-matching multi-task learning (FaceBehaviorNet) as a research kit."""
__version__ = "0.1.0"
