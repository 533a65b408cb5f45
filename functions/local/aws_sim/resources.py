"""The stack's stateful resources, created in moto from the template's own settings (what CloudFormation would do).

Buckets (versioned as the template says), DynamoDB tables (keys, attributes, indexes), SQS queues (with their
redrive policy), SNS topics, the SES sender identity, the review signing-key secret (generated in the template's
form), the intake bucket's notifications, and the state machine. Roles, keys, alarms, the REST API and the Lambda
functions themselves are not created: the sim calls the handlers in-process, so nothing would read them.
"""

import json
import secrets
import string
from typing import Any

import boto3

from functions.local.aws_sim.stack import ACCOUNT, REGION, StackNames, SynthesizedStack, with_short_retry_waits

SIM_ROLE = f"arn:aws:iam::{ACCOUNT}:role/catalog-aws-sim"


def create_stack_resources(stack: SynthesizedStack, names: StackNames) -> None:
    """Create everything the handlers touch, in dependency order; `names` learns each physical name and ARN."""
    _create_buckets(stack, names)
    _create_tables(stack, names)
    _create_queues(stack, names)
    _create_topics(stack, names)
    _create_secrets(stack, names)
    _verify_email_identities(stack, names)
    _configure_bucket_notifications(stack, names)


def _create_buckets(stack: SynthesizedStack, names: StackNames) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    for logical_id, resource in stack.resources("AWS::S3::Bucket").items():
        properties = resource.get("Properties", {})
        bucket = str(names.resolve(properties.get("BucketName"))) if "BucketName" in properties else None
        bucket = bucket or names.physical_name(logical_id)
        s3.create_bucket(Bucket=bucket)
        names.created(logical_id, bucket, f"arn:aws:s3:::{bucket}")
        if (properties.get("VersioningConfiguration") or {}).get("Status") == "Enabled":
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def _create_tables(stack: SynthesizedStack, names: StackNames) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    for logical_id, resource in stack.resources("AWS::DynamoDB::Table").items():
        properties = names.resolve(resource.get("Properties", {}))
        table = properties.get("TableName") or names.physical_name(logical_id)
        request: dict[str, Any] = {
            "TableName": table,
            "KeySchema": properties["KeySchema"],
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "BillingMode": "PAY_PER_REQUEST",
        }
        for index_kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            indexes = [
                {key: index[key] for key in ("IndexName", "KeySchema", "Projection") if key in index}
                for index in properties.get(index_kind) or ()
            ]
            if indexes:
                request[index_kind] = indexes
        arn = dynamodb.create_table(**request)["TableDescription"]["TableArn"]
        names.created(logical_id, table, arn)


def _create_queues(stack: SynthesizedStack, names: StackNames) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    queues = stack.resources("AWS::SQS::Queue")
    for logical_id, resource in queues.items():  # first every queue, so a redrive policy can name its DLQ
        name = resource.get("Properties", {}).get("QueueName") or names.physical_name(logical_id)
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        names.created(logical_id, url, arn)
    for logical_id, resource in queues.items():
        properties = names.resolve(resource.get("Properties", {}))
        attributes = {
            name: str(properties[name])
            for name in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds")
            if name in properties
        }
        if "RedrivePolicy" in properties:
            attributes["RedrivePolicy"] = json.dumps(properties["RedrivePolicy"])
        if attributes:
            sqs.set_queue_attributes(QueueUrl=names.refs[logical_id], Attributes=attributes)


def _create_topics(stack: SynthesizedStack, names: StackNames) -> None:
    sns = boto3.client("sns", region_name=REGION)
    for logical_id, resource in stack.resources("AWS::SNS::Topic").items():
        name = resource.get("Properties", {}).get("TopicName") or names.physical_name(logical_id)
        arn = sns.create_topic(Name=name)["TopicArn"]
        names.created(logical_id, arn, arn)


def generated_secret_string(generate: dict[str, Any]) -> str:
    """What CloudFormation's GenerateSecretString makes: a random password, alone or under a key of the template."""
    alphabet = string.ascii_letters + string.digits
    if not generate.get("ExcludePunctuation"):
        alphabet += string.punctuation
    if generate.get("IncludeSpace"):
        alphabet += " "
    for flag, characters in (
        ("ExcludeUppercase", string.ascii_uppercase),
        ("ExcludeLowercase", string.ascii_lowercase),
        ("ExcludeNumbers", string.digits),
    ):
        if generate.get(flag):
            alphabet = "".join(c for c in alphabet if c not in characters)
    alphabet = "".join(c for c in alphabet if c not in generate.get("ExcludeCharacters", ""))
    password = "".join(secrets.choice(alphabet) for _ in range(int(generate.get("PasswordLength", 32))))
    if "SecretStringTemplate" not in generate:
        return password
    document = json.loads(generate["SecretStringTemplate"])
    document[generate["GenerateStringKey"]] = password
    return json.dumps(document)


def _create_secrets(stack: SynthesizedStack, names: StackNames) -> None:
    secretsmanager = boto3.client("secretsmanager", region_name=REGION)
    for logical_id, resource in stack.resources("AWS::SecretsManager::Secret").items():
        properties = names.resolve(resource.get("Properties", {}))
        value = properties.get("SecretString") or generated_secret_string(properties.get("GenerateSecretString", {}))
        name = properties.get("Name") or names.physical_name(logical_id)
        arn = secretsmanager.create_secret(Name=name, SecretString=value)["ARN"]
        names.created(logical_id, arn, arn)  # Ref of a secret is its ARN


def _verify_email_identities(stack: SynthesizedStack, names: StackNames) -> None:
    ses = boto3.client("ses", region_name=REGION)
    for logical_id, resource in stack.resources("AWS::SES::EmailIdentity").items():
        identity = str(names.resolve(resource["Properties"]["EmailIdentity"]))
        ses.verify_email_identity(EmailAddress=identity)
        names.created(logical_id, identity, f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/{identity}")


def _configure_bucket_notifications(stack: SynthesizedStack, names: StackNames) -> None:
    """The CDK sets bucket notifications through a custom resource; the sim applies its configuration directly."""
    s3 = boto3.client("s3", region_name=REGION)
    for resource in stack.resources("Custom::S3BucketNotifications").values():
        properties = names.resolve(resource["Properties"])
        configuration = {
            kind: properties["NotificationConfiguration"][kind]
            for kind in ("QueueConfigurations", "TopicConfigurations", "LambdaFunctionConfigurations")
            if properties["NotificationConfiguration"].get(kind)
        }
        s3.put_bucket_notification_configuration(
            Bucket=properties["BucketName"], NotificationConfiguration=configuration
        )


def create_state_machine(
    stack: SynthesizedStack, names: StackNames, definition: dict[str, Any], logical_id: str
) -> str:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = str(
        sfn.create_state_machine(
            name=names.physical_name(logical_id),
            definition=json.dumps(with_short_retry_waits(definition)),
            roleArn=SIM_ROLE,
            type=stack.properties(logical_id).get("StateMachineType", "STANDARD"),
        )["stateMachineArn"]
    )
    names.created(logical_id, arn, arn)  # Ref of a state machine is its ARN
    return arn
