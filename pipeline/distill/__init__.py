"""Knowledge distillation of a student on generated images (DAFL's student step)."""
