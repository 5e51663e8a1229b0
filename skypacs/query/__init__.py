"""Query semantics defined once (DESIGN.md): the model, the return attributes, the reference matcher.

QIDO-RS (PS3.18 8.3.4) and C-FIND (PS3.4 C.2.2.2) both become a :class:`~skypacs.query.model.Query`;
every QueryIndex adapter answers it, and differential tests check each against
:func:`~skypacs.query.matcher.reference_search`.
"""
