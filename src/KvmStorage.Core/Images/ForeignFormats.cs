using KvmStorage.Core.Images.Luks;
using KvmStorage.Core.Images.Parallels;
using KvmStorage.Core.Images.Qcow1;
using KvmStorage.Core.Images.Qed;
using KvmStorage.Core.Images.Vdi;
using KvmStorage.Core.Images.Vhdx;
using KvmStorage.Core.Images.Vmdk;
using KvmStorage.Core.Images.Vpc;

namespace KvmStorage.Core.Images;

/// <summary>Registers the readers and writers of the formats other than qcow2 and raw.</summary>
public static partial class ImageFormatRegistry
{
    /// <summary>
    /// Priorities: 20 for formats with a magic number at offset 0 that also names a version (qcow v1, LUKS1, QED);
    /// 30 for the other magic-at-0 formats (VMDK, VHDX, Parallels) and VDI's signature at 0x40;
    /// 80 for VHD, whose fixed variant is only recognisable by its trailing footer, so every format with a
    /// header at the start must get the first word.
    /// </summary>
    static partial void AddForeignFormats(List<IImageFormatReader> readers)
    {
        readers.Add(new Qcow1Reader());
        readers.Add(new LuksReader());
        readers.Add(new QedReader());
        readers.Add(new VmdkReader());
        readers.Add(new VhdxReader());
        readers.Add(new ParallelsReader());
        readers.Add(new VdiReader());
        readers.Add(new VpcReader());
    }

    static partial void AddForeignWriters(List<IImageFormatWriter> writers)
    {
        writers.Add(new VmdkWriter());
    }
}
