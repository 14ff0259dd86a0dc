"""SMS domain code shared by connectors and streams: text codecs, UDH, segmentation."""
