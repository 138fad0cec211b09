//! Supervised contrastive (SupCon) and SimCLR losses: exact, streaming, with analytic gradients.
