"""Training: the pretraining and fine-tuning loops, central pretraining on pooled sites, the
optimizers, DP-SGD, the guard against harmful pretraining, the count baselines and the AUROC a
site reaches alone."""
