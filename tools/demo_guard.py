"""stub"""
def run(world, walker):
    pass
