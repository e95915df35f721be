"""Frame sources (folder, video, camera/RTSP) and the publisher that sends them to Kafka."""
