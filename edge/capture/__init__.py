"""Audio in: files, raw PCM on stdin and microphones, through one ring buffer, at the model rate."""
