"""msc.routing"""
