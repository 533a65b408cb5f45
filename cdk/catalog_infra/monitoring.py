"""A dashboard and the alarms someone should be woken for: DLQ depth (intake and Shopify), failed executions,
endpoint errors, and the age of the oldest queued GPU request."""

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

OLDEST_REQUEST_ALARM = Duration.hours(1)


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        dlq: sqs.IQueue,
        shopify_dlq: sqs.IQueue,
        state_machine: sfn.StateMachine,
        endpoint_name: str,
        alarm_email: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = self._build_topic(alarm_email)
        self._endpoint = {"EndpointName": endpoint_name}
        metrics = {
            "dlq": dlq.metric_approximate_number_of_messages_visible(period=Duration.minutes(5), statistic="Maximum"),
            "shopify_dlq": shopify_dlq.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            "failed": state_machine.metric_failed(period=Duration.minutes(5), statistic="Sum"),
            "timed_out": state_machine.metric_timed_out(period=Duration.minutes(5), statistic="Sum"),
            "endpoint_errors": self._sagemaker_metric("InvocationFailures", "Sum"),
            "oldest_request": self._sagemaker_metric("ApproximateAgeOfOldestRequest", "Maximum"),
            "backlog": self._sagemaker_metric("ApproximateBacklogSize", "Average"),
        }
        self.alarms = self._build_alarms(metrics)
        self.dashboard = self._build_dashboard(state_machine, metrics)

    def _build_topic(self, alarm_email: str) -> sns.Topic:
        key = kms.Key(self, "Key", enable_key_rotation=True, description="Alarm notifications")
        topic = sns.Topic(self, "Alarms", master_key=key, enforce_ssl=True)
        # CloudWatch publishes alarm notifications to the encrypted topic.
        key.grant_encrypt_decrypt(iam.ServicePrincipal("cloudwatch.amazonaws.com"))
        if alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        return topic

    def _sagemaker_metric(self, name: str, statistic: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/SageMaker",
            metric_name=name,
            dimensions_map=self._endpoint,
            statistic=statistic,
            period=Duration.minutes(5),
        )

    def _at_least_one(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        description: str,
        treat_missing_data: cloudwatch.TreatMissingData | None = None,
    ) -> cloudwatch.Alarm:
        """An alarm on any occurrence within one period."""
        return cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=treat_missing_data,
            alarm_description=description,
        )

    def _build_alarms(self, metrics: Mapping[str, cloudwatch.IMetric]) -> dict[str, cloudwatch.Alarm]:
        alarms = {
            "dlq": self._at_least_one(
                "DeadLetters", metrics["dlq"], "Intake messages failed 5 times and wait in the DLQ."
            ),
            "shopify_dlq": self._at_least_one(
                "ShopifyDeadLetters",
                metrics["shopify_dlq"],
                "Shopify product events failed 5 times (image fetch or intake write) and wait in the DLQ.",
            ),
            "failed": self._at_least_one("FailedExecutions", metrics["failed"], "Images ended in a failed state."),
            "endpoint_errors": self._at_least_one(
                "EndpointErrors",
                metrics["endpoint_errors"],
                "GPU jobs failed on the endpoint.",
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,  # no invocations: nothing failed
            ),
            "oldest_request": cloudwatch.Alarm(
                self,
                "BacklogAge",
                metric=metrics["oldest_request"],
                threshold=OLDEST_REQUEST_ALARM.to_seconds(),
                evaluation_periods=2,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description="A GPU request has waited over an hour.",
            ),
        }
        for alarm in alarms.values():
            alarm.add_alarm_action(actions.SnsAction(self.topic))
        return alarms

    def _build_dashboard(
        self, state_machine: sfn.StateMachine, metrics: Mapping[str, cloudwatch.IMetric]
    ) -> cloudwatch.Dashboard:
        dashboard = cloudwatch.Dashboard(self, "Dashboard")
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Executions",
                left=[
                    state_machine.metric_started(),
                    state_machine.metric_succeeded(),
                    metrics["failed"],
                    metrics["timed_out"],
                ],
            ),
            cloudwatch.GraphWidget(title="Intake DLQs", left=[metrics["dlq"], metrics["shopify_dlq"]]),
            cloudwatch.GraphWidget(title="GPU backlog", left=[metrics["backlog"]], right=[metrics["oldest_request"]]),
            cloudwatch.GraphWidget(title="GPU failures", left=[metrics["endpoint_errors"]]),
        )
        return dashboard
