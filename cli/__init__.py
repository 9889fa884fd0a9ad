"""The one ``segflow`` command, wiring training and serving."""
