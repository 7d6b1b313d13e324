"""Wire formats clients speak: parse an HTTP body into an InferenceRequest, render answers back."""
