using System.Management.Automation;

namespace KvmStorage.Infrastructure;

/// <summary>Turns the ways a command can name an image (volume object, path, wildcard path) into local file paths.</summary>
internal static class VolumePathResolver
{
    /// <summary>A volume object's local path, or a path string resolved against the current location (~, relative).</summary>
    public static string Resolve(PSCmdlet cmdlet, VolumeReference reference) =>
        reference.Volume is not null ? reference.Path : cmdlet.GetUnresolvedProviderPathFromPSPath(reference.Path);

    /// <summary>Every file a wildcard path matches; a pattern matching nothing is an error of the provider.</summary>
    public static IEnumerable<string> ResolveWildcard(PSCmdlet cmdlet, string pattern) =>
        cmdlet.GetResolvedProviderPathFromPSPath(pattern, out _);
}
