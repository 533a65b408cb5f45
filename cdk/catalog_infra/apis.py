"""The stage every REST API here gets: throttled, traced, errors and JSON access logs kept a month, no request data
in the logs (it holds link signatures and webhook bodies)."""

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_logs as logs
from constructs import Construct


def logged_stage(scope: Construct, stage_name: str, rate_limit: int, burst_limit: int) -> apigw.StageOptions:
    """Stage options, with their access-log group created in `scope` as `ApiAccessLogs`."""
    access_logs = logs.LogGroup(
        scope, "ApiAccessLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
    )
    return apigw.StageOptions(
        stage_name=stage_name,
        tracing_enabled=True,
        logging_level=apigw.MethodLoggingLevel.ERROR,
        data_trace_enabled=False,
        access_log_destination=apigw.LogGroupLogDestination(access_logs),
        access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
            caller=False,
            http_method=True,
            ip=True,
            protocol=True,
            request_time=True,
            resource_path=True,
            response_length=True,
            status=True,
            user=False,
        ),
        throttling_rate_limit=rate_limit,
        throttling_burst_limit=burst_limit,
    )
