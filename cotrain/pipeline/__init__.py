"""`cotrain.experiment`'s parts: its typed config, the run record (results.json), the demo store and the steps."""
