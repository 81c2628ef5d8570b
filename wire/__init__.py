"""Every wire format Ash speaks. Pure data and codecs: nothing here does I/O."""
