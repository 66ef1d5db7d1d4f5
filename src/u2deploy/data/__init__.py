"""Images in (robust decoding), tensors out (reference and fast preprocessing), masks back."""
