"""Stage 1: Brevitas-quantized 1-bit models, their training methods, data and checkpoints."""
import warnings

# Brevitas 0.13 imports pkg_resources, which setuptools 80 (the version that still ships it) flags as
# deprecated on every run; the message is about Brevitas' packaging, not about anything a user can fix.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
