"""The sample suite: a procedural, license-free mini-MMEB in the exact MMEB formats."""
