from twisted.application.service import ServiceMaker

lals = ServiceMaker("lals", "lal_twisted.service", "Live-streaming server: RTMP, HTTP-FLV.", "lals")
