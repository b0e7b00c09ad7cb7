"""msc.cli"""
