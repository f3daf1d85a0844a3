using KvmStorage.Core.Volumes;

namespace KvmStorage.Infrastructure;

/// <summary>
/// A volume given as the object <c>Get-Volume</c> emits or as a path to an image file. PowerShell converts
/// either (and a FileInfo from Get-ChildItem) to this type through its constructors.
/// </summary>
public sealed class VolumeReference
{
    public VolumeReference(StorageVolume volume)
    {
        ArgumentNullException.ThrowIfNull(volume);
        Volume = volume;
        Path = volume.LocalPath;
    }

    public VolumeReference(FileInfo file)
    {
        ArgumentNullException.ThrowIfNull(file);
        Path = file.FullName;
    }

    public VolumeReference(string path)
    {
        Path = path;
    }

    /// <summary>The path on this machine (under the host root when it came from a volume object).</summary>
    public string Path { get; }

    public StorageVolume? Volume { get; }

    public override string ToString() => Volume?.Path ?? Path;
}
