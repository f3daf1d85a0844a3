using KvmStorage.Core.Images.Qcow2;
using KvmStorage.Core.Images.Raw;

namespace KvmStorage.Core.Images;

/// <summary>
/// The image formats the engine knows: readers in probe order and writers by format. qcow2 and raw live in
/// this branch; the other formats plug in through <see cref="AddForeignFormats"/> and <see cref="AddForeignWriters"/>,
/// implemented in another file of this partial class.
/// </summary>
public static partial class ImageFormatRegistry
{
    private static readonly Lazy<IImageFormatReader[]> LazyReaders = new(BuildReaders);
    private static readonly Lazy<IImageFormatWriter[]> LazyWriters = new(BuildWriters);

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

    static partial void AddForeignFormats(List<IImageFormatReader> readers);

    static partial void AddForeignWriters(List<IImageFormatWriter> writers);

    private static IImageFormatReader[] BuildReaders()
    {
        var readers = new List<IImageFormatReader> { new Qcow2Reader() };
        AddForeignFormats(readers);
        if (!readers.Any(r => r.Format == ImageFormat.Raw))
        {
            readers.Add(new RawReader());
        }

        // A stable sort: equal priorities keep the order in which they were added.
        return readers.Select((r, i) => (r, i)).OrderBy(x => x.r.Priority).ThenBy(x => x.i).Select(x => x.r).ToArray();
    }

    private static IImageFormatWriter[] BuildWriters()
    {
        var writers = new List<IImageFormatWriter> { new Qcow2ImageWriter(), new RawImageWriter() };
        AddForeignWriters(writers);
        return writers.ToArray();
    }
}
