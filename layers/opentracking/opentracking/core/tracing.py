"""The Powertools tracer (X-Ray), for the functions that trace. The pixel does not import this."""

from aws_lambda_powertools import Tracer

tracer = Tracer()
