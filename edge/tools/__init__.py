"""Commands around the pipeline: doctor (checks a field install), bench (timings), demo."""
