"""Text processing: offline tokenizer, parsing uploads into text, splitting."""
