"""Mutational-effect evaluations on deep mutational scans: supervised fine-tuning (Rives et al. 2021, Fig. 7) and
zero-shot variant scoring (Meier et al. 2021)."""
