import struct, time, io, numpy as np, tensorflow as tf
from PIL import Image
from vse_tf.serving.decoding import decode_batch_for_serving
def gif_with_frame(w,h,payload):
    header = b"GIF89a" + struct.pack("<HHBBB", 16,16, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    d = b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0)
    blocks = b"".join(b"\xff" + bytes(255) for _ in range(payload // 255))
    return header + d + b"\x02" + blocks + b"\x00" + b";"
f = tf.function(lambda x: decode_batch_for_serving(x, 64), input_signature=[tf.TensorSpec([None], tf.string)])
bomb = gif_with_frame(40000,40000,1_100_000); print(len(bomb))
try: f(tf.constant([gif_with_frame(100,100,300)]))
except Exception: pass
for _ in range(2):
    t=time.perf_counter()
    try: f(tf.constant([bomb]))
    except tf.errors.InvalidArgumentError as e: msg=e.message.splitlines()[-2] if False else 'refused'
    print('bomb', msg, round(time.perf_counter()-t,3))
rgb=Image.fromarray(np.random.default_rng(0).integers(0,255,(480,640,3),dtype=np.uint8))
b=io.BytesIO(); rgb.save(b,'GIF'); g=b.getvalue(); print('gif bytes', len(g))
b=io.BytesIO(); rgb.save(b,'PNG'); p=b.getvalue()
for name,x in (('gif',g),('png',p)):
    f(tf.constant([x])); t=time.perf_counter()
    for _ in range(5): f(tf.constant([x]))
    print(name, round((time.perf_counter()-t)/5,4))
