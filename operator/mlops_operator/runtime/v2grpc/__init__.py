"""Generated Python code of ``grpc_predict_v2.proto`` (Open Inference Protocol V2 over gRPC); see that file."""
