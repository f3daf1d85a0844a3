using KvmStorage.Core.Images.Luks;
using KvmStorage.Core.Images.Parallels;
using KvmStorage.Core.Images.Qcow1;
using KvmStorage.Core.Images.Qcow2;
using KvmStorage.Core.Images.Qed;
using KvmStorage.Core.Images.Raw;
using KvmStorage.Core.Images.Vdi;
using KvmStorage.Core.Images.Vhdx;
using KvmStorage.Core.Images.Vmdk;
using KvmStorage.Core.Images.Vpc;

namespace KvmStorage.Core.Images;

/// <summary>
/// The image formats the engine knows, one driver each (<see cref="IImageFormat"/>), and the one dispatch: a file's
/// format by its content (<see cref="Detect"/>), then the format's driver (<see cref="Driver"/>) for any operation.
/// </summary>
public static class ImageFormatRegistry
{
    /// <summary>
    /// Every driver, one per <see cref="ImageFormat"/>. Probe order is <see cref="IImageFormatReader.Priority"/>, equal
    /// priorities in this order: 20 for formats with a magic number at offset 0 that also names a version (qcow v1,
    /// LUKS1, QED); 30 for the other magic-at-0 formats (VMDK, VHDX, Parallels) and VDI's signature at 0x40; 80 for VHD,
    /// whose fixed variant is only recognisable by its trailing footer, so every format with a header at the start must
    /// get the first word; 100 for qcow2; raw, the fallback, last.
    /// </summary>
    private static readonly Lazy<IImageFormat[]> LazyFormats = new(() =>
    [
        new Qcow2Format(),
        new Qcow1Format(),
        new LuksFormat(),
        new QedFormat(),
        new VmdkFormat(),
        new VhdxFormat(),
        new ParallelsFormat(),
        new VdiFormat(),
        new VpcFormat(),
        new RawFormat(),
    ]);

    // A stable sort: equal priorities keep the order of the drivers.
    private static readonly Lazy<IImageFormatReader[]> LazyReaders = new(() =>
        LazyFormats.Value.Select((f, i) => (f.Reader, i)).OrderBy(x => x.Reader.Priority).ThenBy(x => x.i).Select(x => x.Reader).ToArray());

    private static readonly Lazy<IImageFormatWriter[]> LazyWriters = new(() =>
        LazyFormats.Value.Select(f => f.Writer).OfType<IImageFormatWriter>().ToArray());

    /// <summary>Readers by ascending <see cref="IImageFormatReader.Priority"/>; raw is last.</summary>
    public static IReadOnlyList<IImageFormatReader> Readers => LazyReaders.Value;

    public static IReadOnlyList<IImageFormatWriter> Writers => LazyWriters.Value;

    /// <summary>The first reader whose probe accepts the file; raw when none does.</summary>
    public static IImageFormatReader Detect(ImageProbe probe)
    {
        foreach (IImageFormatReader reader in Readers)
        {
            if (reader.Format != ImageFormat.Raw && reader.Probe(probe))
            {
                return reader;
            }
        }

        return FindReader(ImageFormat.Raw)!;
    }

    public static IImageFormatReader? FindReader(ImageFormat format) => Readers.FirstOrDefault(r => r.Format == format);

    public static IImageFormatWriter? FindWriter(ImageFormat format) => Writers.FirstOrDefault(w => w.Format == format);

    /// <summary>The driver of <paramref name="format"/>; every format has one.</summary>
    internal static IImageFormat Driver(ImageFormat format) => Find(format) ?? throw new ArgumentOutOfRangeException(nameof(format), format, "Unknown image format.");

    /// <summary>The driver of <paramref name="format"/>, or null for a value that names no format.</summary>
    internal static IImageFormat? Find(ImageFormat format) => LazyFormats.Value.FirstOrDefault(f => f.Format == format);
}
