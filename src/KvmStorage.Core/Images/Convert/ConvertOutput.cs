using KvmStorage.Core.Errors;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Convert;

/// <summary>
/// A format <see cref="ImageConverter"/> can write (a driver's <see cref="IImageFormat.ConvertOutput"/>): which of the
/// shared options it takes, its own checks, its allocation unit, its size estimate and its writer.
/// </summary>
internal abstract class ConvertOutput
{
    /// <summary>What the output is called in messages.</summary>
    public abstract string Name { get; }

    /// <summary>Whether <see cref="ConvertOptions.Compress"/> applies.</summary>
    public virtual bool TakesCompress => false;

    /// <summary>Whether <see cref="Preallocation.Metadata"/> applies.</summary>
    public virtual bool TakesMetadataPreallocation => false;

    /// <summary>Whether the output can be preallocated at all.</summary>
    public virtual bool TakesPreallocation => true;

    /// <summary>Whether the output can record <see cref="ConvertOptions.BackingFile"/>.</summary>
    public virtual bool TakesBackingFile => false;

    /// <summary>Whether <see cref="ConvertOptions.Encryption"/> applies.</summary>
    public virtual bool TakesEncryption => false;

    /// <summary>Whether the format has a fixed variant (<see cref="ConvertOptions.Fixed"/>).</summary>
    public virtual bool TakesFixed => false;

    /// <summary>Whether <see cref="ConvertOptions.ForceSize"/> applies (vpc).</summary>
    public virtual bool TakesForceSize => false;

    /// <summary>The allocation unit: what the converter reads, zero-checks and compresses at a time.</summary>
    public abstract int Unit(ConvertOptions options);

    /// <summary>The format's own checks of <paramref name="options"/>, after the shared ones.</summary>
    public virtual void Validate(ulong size, string path, ConvertOptions options)
    {
    }

    /// <summary>The output's expected size for a <paramref name="size"/>-byte disk holding <paramref name="data"/> bytes in allocated units.</summary>
    public abstract ulong EstimateSize(ulong size, ulong data, ConvertOptions options);

    /// <summary>The writer of a new output in <paramref name="handle"/> (written at <paramref name="tempPath"/>, renamed to <paramref name="finalPath"/>).</summary>
    public abstract ConvertTarget CreateTarget(SafeFileHandle handle, string tempPath, string finalPath, ulong size, ConvertOptions options);

    public static KvmStorageException Invalid(string path, string message) =>
        new(ErrorKind.InvalidArgument, ConvertErrorIds.InvalidConvertOptions, message, path);
}
