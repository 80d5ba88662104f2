"""Site validation: measure the MAP's zero-shot analysis on a site's own labelled studies.

`biomedclip-map validate` runs the same graph as the MAP through the run API with
`RunSettings.write_reports` off (no SR is written), matches each analysed study or instance to
its label (`labels`), computes the metrics with scikit-learn (`metrics`), draws the figures
with matplotlib (`plots`) and writes `report.json`, the PNGs and one self-contained
`report.html` (`report`). Nothing in the report identifies a patient: cases are named by the
salted study references the logs use.
"""
