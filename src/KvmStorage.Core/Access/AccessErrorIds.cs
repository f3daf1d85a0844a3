namespace KvmStorage.Core.Access;

/// <summary>Error ids of the access layer: paths and files the module refuses to reach.</summary>
public static class AccessErrorIds
{
    /// <summary>A path (given by the user, or a pool's folder) that lies, lexically or through a link, outside the host root.</summary>
    public const string PathOutsideHostRoot = "PathOutsideHostRoot";

    /// <summary>An image outside every pool given where the module only acts on pool volumes without -Force.</summary>
    public const string FileOutsidePools = "FileOutsidePools";

    /// <summary>A file that an image's backing chain names, not the user, which a command would have to write.</summary>
    public const string ChainFileNotWritable = "ChainFileNotWritable";

    /// <summary>A piped object that names nothing the cmdlet lists (a pool piped to Get-VMDisk).</summary>
    public const string InputNotRecognized = "InputObjectNotRecognized";

    /// <summary>An object that names a pool but no volume, piped or bound where one volume is meant.</summary>
    public const string VolumeNotNamed = "VolumeNotNamed";
}
