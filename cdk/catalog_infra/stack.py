"""The one stack: storage, GPU endpoint, review, workflow, intake and monitoring, wired together."""

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from .backfill import Backfill
from .config import DeployConfig
from .gpu_endpoint import GpuEndpoint
from .intake import Intake
from .monitoring import Monitoring
from .nag import acknowledge_findings
from .review import Review
from .shopify import Shopify
from .storage import Storage
from .training import Training
from .workflow import Workflow


class CatalogStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: DeployConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.storage = Storage(self, "Storage")
        self.gpu = GpuEndpoint(self, "Gpu", storage=self.storage, config=config)
        self.training = Training(self, "Training", storage=self.storage, image=self.gpu.image)
        self.review = Review(self, "Review", storage=self.storage, config=config)
        self.workflow = Workflow(
            self, "Workflow", storage=self.storage, gpu=self.gpu, review=self.review, config=config
        )
        state_machine = self.workflow.state_machine
        self.gpu.allow_resume(state_machine)
        self.review.allow_resume(state_machine)
        self.intake = Intake(
            self,
            "Intake",
            storage=self.storage,
            state_machine=state_machine,
            via_event_bridge=config.intake_via_event_bridge,
        )
        self.shopify = Shopify(self, "Shopify", storage=self.storage, config=config, log_role_api=self.review.api)
        self.workflow.publish_to_shopify(self.shopify.admin_token)
        self.backfill = Backfill(
            self, "Backfill", storage=self.storage, intake=self.intake, state_machine=state_machine, config=config
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            dlq=self.intake.dlq,
            shopify_dlq=self.shopify.dlq,
            state_machine=state_machine,
            endpoint_name=self.gpu.endpoint_name,
            alarm_email=config.alarm_email,
        )
        self._add_outputs(config)
        acknowledge_findings(self)

    def _add_outputs(self, config: DeployConfig) -> None:
        """What an operator needs after a deploy: where to upload, where results land, what to watch."""
        CfnOutput(
            self,
            "IntakeBucket",
            value=self.storage.intake.bucket_name,
            description=f"Upload to incoming/{config.brand}/<sku>/",
        )
        CfnOutput(self, "OutputBucket", value=self.storage.output.bucket_name)
        CfnOutput(
            self,
            "BrandsUri",
            value=self.storage.brands_uri,
            description="Brand store (ML owner): put <brand>/profile.json here, with the adapters and model photos "
            "it points at; prepare reads the profile of the brand in incoming/<brand>/<sku>/",
        )
        CfnOutput(self, "StateMachineArn", value=self.workflow.state_machine.state_machine_arn)
        CfnOutput(self, "ReviewSigningKeysSecret", value=self.review.keys_secret.secret_arn)
        CfnOutput(self, "DashboardName", value=self.monitoring.dashboard.dashboard_name)
