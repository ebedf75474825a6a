"""Reading a published corpus back: one sample drawn and made audible."""
