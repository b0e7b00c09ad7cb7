"""msc.stubs"""
