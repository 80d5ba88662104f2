"""The MAP's operator graph, as drawn in ARCHITECTURE.md.

DICOMLoader ─► SeriesSelector ─► ModalityPreprocessing ─► BiomedCLIPInference ─► Specialists ─► PHIScrubber ─► SRWriter

For site validation (`RunSettings.write_reports` False) the same graph ends in an
AnalysisCollector instead of the SRWriter: the studies are analysed exactly as for a report,
and their analyses are handed back instead of written.
"""

from __future__ import annotations

from holoscan.conditions import CountCondition
from holoscan.core import Application

from app.configuration import ProductConfiguration
from app.log_privacy import LOG_REDACTOR
from app.settings import RunSettings
from common.operating_points import SiteOperatingPoints
from operators.analysis_collector_operator import AnalysisCollectorOperator
from operators.biomedclip_inference_operator import BiomedCLIPInferenceOperator
from operators.dicom_loader_operator import DICOMLoaderOperator
from operators.messages import RunResults
from operators.modality_preprocessing_operator import ModalityPreprocessingOperator
from operators.phi_scrubber_operator import PHIScrubberOperator
from operators.series_selector_operator import SeriesSelectorOperator
from operators.specialists_operator import SpecialistsOperator
from operators.sr_writer_operator import SRWriterOperator
from operators.inference.zero_shot_analyzer import ZeroShotAnalyzer
from operators.study_batch import StageProgress


class BiomedCLIPMapApp(Application):
    """One run over an input folder: every study in it is analysed and reported, or accounted for.

    The analyzer (model, backend, cached text embeddings) is created by the caller and passed in,
    so a long-running DICOM node keeps it warm across runs. Every study's outcome reaches the
    caller's `results` (filled by the graph's sink); `progress`, if given, is told after each
    study of the two slow stages (preprocessing and inference); `operating_points`, the site's
    checked thresholds, go to the SR writer.
    """

    def __init__(
        self,
        settings: RunSettings,
        analyzer: ZeroShotAnalyzer,
        configuration: ProductConfiguration,
        results: RunResults,
        progress: StageProgress | None = None,
        operating_points: SiteOperatingPoints | None = None,
    ):
        self.settings = settings
        self.analyzer = analyzer
        self.configuration = configuration
        self.results = results
        self.progress = progress
        self.operating_points = operating_points
        super().__init__([])

    def compose(self) -> None:
        s, c, model = self.settings, self.configuration, self.analyzer.model
        loader = DICOMLoaderOperator(
            self, CountCondition(self, 1), name="dicom_loader", input_path=s.input_path, uid_salt=s.uid_salt,
            on_scanned=LOG_REDACTOR.register_studies,
        )
        selector = SeriesSelectorOperator(self, name="series_selector", rules=c.rules)
        preprocessing = ModalityPreprocessingOperator(self, name="modality_preprocessing", settings=c.preprocessing, mean=model.mean, std=model.std, progress=self.progress)
        inference = BiomedCLIPInferenceOperator(self, name="biomedclip_inference", analyzer=self.analyzer, progress=self.progress)
        specialists = SpecialistsOperator(self, name="specialists", specialists=c.build_specialists(self.analyzer))
        scrubber = PHIScrubberOperator(self, name="phi_scrubber", clinical_context=s.clinical_context)
        if s.write_reports:
            writer = SRWriterOperator(self, name="sr_writer", output_dir=s.output_path, results=self.results, results_json_dir=s.results_json_dir, operating_points=self.operating_points)
        else:
            writer = AnalysisCollectorOperator(self, name="analysis_collector", results=self.results)

        self.add_flow(loader, selector)
        self.add_flow(selector, preprocessing)
        self.add_flow(preprocessing, inference)
        self.add_flow(inference, specialists)
        self.add_flow(specialists, scrubber)
        self.add_flow(scrubber, writer)
