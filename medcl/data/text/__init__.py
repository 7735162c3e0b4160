"""The clinical text vocabulary: CheXpert labels and codes, the rule-based report labeler, report sections,
report-generation prompts and structured reports, and radiograph view names.

It sits in ``data`` because datasets, models and metrics all speak it: placing it any higher would make the data
layer import upwards.
"""
